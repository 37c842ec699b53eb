"""URLs of the project builder, under /builder/: its pages, and the JSON endpoints of its fetch calls
(under workflows/<id>/, as the dashboards' actions are)."""

from django.urls import path

from builder import views

app_name = "builder"

urlpatterns = [
    path("", views.index, name="index"),
    path("projects/", views.create_project, name="create-project"),
    path("projects/<slug:slug>/", views.project, name="project"),
    path("projects/<slug:slug>/workflows/", views.create_workflow, name="create-workflow"),
    path("projects/<slug:slug>/workflows/<int:workflow_id>/", views.workflow, name="workflow"),
    path("workflows/<int:workflow_id>/tree/check/", views.check_tree, name="check-tree"),
    path("workflows/<int:workflow_id>/tree/", views.save_tree, name="save-tree"),
    path("workflows/<int:workflow_id>/subjects/", views.upload, name="upload"),
    path("workflows/<int:workflow_id>/retirement/", views.retirement, name="retirement"),
    path("workflows/<int:workflow_id>/gold-rate/", views.gold_rate, name="gold-rate"),
    path("workflows/<int:workflow_id>/machine/", views.machine, name="machine"),
    path("workflows/<int:workflow_id>/launch/", views.launch, name="launch"),
    path("workflows/<int:workflow_id>/pause/", views.pause, name="pause"),
]
