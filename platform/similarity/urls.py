"""URLs of similarity search: its API under /api/workflows/<id>/similarity/ and its page next to the
workflow's other scientists' pages."""

from django.urls import path

from similarity import api, views

app_name = "similarity"

API = "api/workflows/<int:pk>/similarity/"

urlpatterns = [
    path(f"{API}spaces/", api.SpacesView.as_view(), name="spaces"),
    path(f"{API}similar/", api.SimilarView.as_view(), name="similar"),
    path(f"{API}anomalies/", api.AnomaliesView.as_view(), name="anomalies"),
    path(f"{API}map/", api.MapView.as_view(), name="map"),
    path(f"{API}send-first/", api.SendFirstView.as_view(), name="send-first"),
    path(f"{API}questions/", api.QuestionsView.as_view(), name="questions"),
    path(f"{API}questions/<int:question_id>/", api.QuestionView.as_view(), name="question"),
    path(f"{API}questions/<int:question_id>/labels/", api.QuestionLabelsView.as_view(), name="question-labels"),
    path(f"{API}questions/<int:question_id>/fit/", api.QuestionFitView.as_view(), name="question-fit"),
    path(f"{API}questions/<int:question_id>/ranking.csv", api.QuestionRankingView.as_view(), name="question-ranking"),
    path("projects/<slug:slug>/workflows/<int:workflow_id>/similarity/", views.page, name="page"),
]
