from django.apps import AppConfig


class LocalProvidersConfig(AppConfig):
    name = "localproviders"
    verbose_name = "Local providers"
