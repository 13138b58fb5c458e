from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Usage records, cost and savings, budgets (docs/architecture.md §11)."""

    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing import receivers
        from billing.api.serializers import WorkloadCostField
        from workloads.api.serializers import workload_detail_section_register
        from workloads.signals import instance_released, workload_admission

        workload_admission.connect(receivers.on_workload_admission, dispatch_uid="billing.budget")
        instance_released.connect(receivers.on_instance_released, dispatch_uid="billing.usage_record")
        workload_detail_section_register(name="cost", field_factory=WorkloadCostField)
