"""The S3 path of the upload storage, against a local S3-compatible server (moto's
ThreadedMotoServer, started by the test): the real boto3 and django-storages code
talks HTTP to it, as it would to S3."""

import boto3
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import CatalogUpload, Product
from catalog.services import catalog_import_run
from tests.conftest import bearer_client

BUCKET = "engage-catalog-test"


@pytest.fixture
def s3_storage(settings, monkeypatch):  # noqa: ANN001, ANN201
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    # What config/settings.py builds when AWS_STORAGE_BUCKET_NAME is set.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "default_acl": None,
                "file_overwrite": False,
            },
        },
    }
    yield client
    server.stop()


def test_an_upload_is_kept_in_s3_and_imported_from_there(project_a, s3_storage, media_root):
    project, keys = project_a
    api = bearer_client(keys.secret_key)
    data = b"product_id,name,price\nS1,Stored in S3,3.5\nS2,Bad,x\n"
    response = api.post(
        "/api/v1/catalog/uploads", {"file": SimpleUploadedFile("s3.csv", data), "mode": "upsert"}, format="multipart"
    )
    assert response.status_code == 202
    upload = CatalogUpload.objects.get(pk=response.json()["id"])
    keys_in_bucket = [o["Key"] for o in s3_storage.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys_in_bucket == [upload.file.name]
    assert upload.file.name.startswith("catalog/uploads/") and upload.file.name.endswith(".csv")
    assert s3_storage.get_object(Bucket=BUCKET, Key=upload.file.name)["Body"].read() == data
    assert not media_root.exists()  # nothing went to the local media folder

    done = catalog_import_run(upload_id=upload.pk)  # reads the file back from S3
    assert (done.state, done.created, done.rejected) == ("done", 1, 1)
    assert Product.objects.get(project=project, product_id="S1").name == "Stored in S3"
    assert done.error_file.name in [o["Key"] for o in s3_storage.list_objects_v2(Bucket=BUCKET)["Contents"]]
    errors = api.get(f"/api/v1/catalog/uploads/{upload.pk}/errors")
    assert b"".join(errors.streaming_content).decode("utf-8-sig").splitlines() == [
        "row,product_id,column,value,reason",
        "3,S2,price,x,not a price (expected a number such as 19.99)",
    ]
