from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Automatic top-up: told after every commit that changed an organization's pool.
        from credits.hooks import after_pool_change

        from .services.topup import topup_pool_changed

        after_pool_change(topup_pool_changed)
