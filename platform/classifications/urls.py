"""URLs of the volunteer API, mounted under /api/."""

from django.urls import path

from classifications import api, sign_in

urlpatterns = [
    path("session/", api.SessionView.as_view(), name="api-session"),
    path("auth/token/", sign_in.token_view, name="api-token"),
    path("projects/", api.ProjectListView.as_view(), name="api-projects"),
    path("projects/<int:pk>/classifications/", api.ProjectClassificationsView.as_view(), name="api-project-classifications"),
    path("workflows/<int:pk>/", api.WorkflowDetailView.as_view(), name="api-workflow"),
    path("workflows/<int:pk>/next-subjects/", api.NextSubjectsView.as_view(), name="api-next-subjects"),
    path("workflows/<int:pk>/subjects/", api.WorkflowSubjectsView.as_view(), name="api-workflow-subjects"),
    path("classifications/", api.ClassificationCreateView.as_view(), name="api-classifications"),
    path("classifications/batch/", api.ClassificationBatchView.as_view(), name="api-classifications-batch"),
    path("me/", api.MeView.as_view(), name="api-me"),
    path("me/classifications/", api.MyClassificationsView.as_view(), name="api-my-classifications"),
]
