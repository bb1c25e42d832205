from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "Customers"

    def ready(self) -> None:
        from crm.admin_base import console_admins_checked

        console_admins_checked()
