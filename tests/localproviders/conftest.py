from tests.localproviders.server import (  # noqa: F401 - fixtures
    channel_settings,
    local_server,
    local_server_url,
    local_service_account_key,
)
