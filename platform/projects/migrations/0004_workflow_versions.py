"""Workflow versions and the scientist role (the project builder, issue 28).

Existing workflows become version 1.0 with their tree as its first history row, and count as
launched (they may have been served: a structural change of their tree now makes a new version,
projects/versioning.py). The "scientists" group holds the permission that opens the project
builder; the owners of existing projects join it (they are the scientists of those projects).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


SCIENTISTS = "scientists"


def version_existing_workflows(apps, schema_editor):
    Workflow = apps.get_model("projects", "Workflow")
    WorkflowVersion = apps.get_model("projects", "WorkflowVersion")
    for workflow in Workflow.objects.all().iterator():
        Workflow.objects.filter(pk=workflow.pk).update(launched_at=workflow.created_at)
        WorkflowVersion.objects.get_or_create(
            workflow=workflow, major=workflow.version_major, minor=workflow.version_minor,
            defaults={"tasks": workflow.tasks, "change": "created"},
        )


def create_scientists_group(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    Project = apps.get_model("projects", "Project")
    content_type, _ = ContentType.objects.get_or_create(app_label="projects", model="project")
    permission, _ = Permission.objects.get_or_create(
        codename="build_projects", content_type=content_type,
        defaults={"name": "Can create projects and workflows in the project builder"},
    )
    group, _ = Group.objects.get_or_create(name=SCIENTISTS)
    group.permissions.add(permission)
    for project in Project.objects.all():
        group.user_set.add(*project.owners.all())


class Migration(migrations.Migration):

    dependencies = [
        ('projects', '0003_whole_workflow_retirement'),
        ('auth', '0012_alter_user_first_name_max_length'),
        ('contenttypes', '0002_remove_content_type_name'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='project',
            options={'ordering': ['id'], 'permissions': [('build_projects', 'Can create projects and workflows in the project builder')]},
        ),
        migrations.AddField(
            model_name='workflow',
            name='launched_at',
            field=models.DateTimeField(blank=True, help_text='First saved active: from then on volunteers may hold its tree.', null=True),
        ),
        migrations.AddField(
            model_name='workflow',
            name='previous_version',
            field=models.OneToOneField(blank=True, help_text='The workflow whose tree this one replaced (its earlier major version).', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='next_version', to='projects.workflow'),
        ),
        migrations.AddField(
            model_name='workflow',
            name='version_major',
            field=models.PositiveIntegerField(default=1, help_text='Moves when what an answer means changes.'),
        ),
        migrations.AddField(
            model_name='workflow',
            name='version_minor',
            field=models.PositiveIntegerField(default=0, help_text='Moves on help text, mark limits, mirror swaps.'),
        ),
        migrations.CreateModel(
            name='WorkflowVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('major', models.PositiveIntegerField()),
                ('minor', models.PositiveIntegerField()),
                ('tasks', models.JSONField()),
                ('change', models.CharField(choices=[('created', 'Created'), ('major', 'Major'), ('minor', 'Minor')], max_length=16)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                ('workflow', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='projects.workflow')),
            ],
            options={
                'ordering': ['workflow_id', 'major', 'minor'],
                'constraints': [models.UniqueConstraint(fields=('workflow', 'major', 'minor'), name='unique_workflow_version')],
            },
        ),
        migrations.RunPython(version_existing_workflows, migrations.RunPython.noop),
        migrations.RunPython(create_scientists_group, migrations.RunPython.noop),
    ]
