# Each usage record carries the market its instance was bought on; records made before are spot.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_customer_in_accounts"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagerecord",
            name="market",
            field=models.CharField(
                choices=[("spot", "spot"), ("on_demand", "on demand")], default="spot", max_length=16
            ),
        ),
    ]
