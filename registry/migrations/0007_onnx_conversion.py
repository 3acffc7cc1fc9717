from django.db import migrations, models


def onnx_versions_run_on_onnx(apps, schema_editor):
    apps.get_model("registry", "ModelVersion").objects.filter(format="onnx").update(runtime="onnx")


class Migration(migrations.Migration):

    dependencies = [
        ("registry", "0006_webhook_endpoints_and_deliveries"),
    ]

    operations = [
        migrations.AddField(
            model_name="registeredmodel",
            name="convert_onnx",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="onnx_artifact_path",
            field=models.CharField(blank=True, max_length=500),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="onnx_sha256",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="onnx_size_bytes",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="onnx_conversion",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="runtime",
            field=models.CharField(
                choices=[("sklearn", "Sklearn"), ("onnx", "Onnx")], default="sklearn", max_length=10
            ),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="runtime_override",
            field=models.CharField(blank=True, choices=[("sklearn", "Sklearn"), ("onnx", "Onnx")], max_length=10),
        ),
        migrations.RunPython(onnx_versions_run_on_onnx, migrations.RunPython.noop),
    ]
