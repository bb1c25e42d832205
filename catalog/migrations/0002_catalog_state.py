"""CatalogState and the triggers that keep its token current (see the model)."""

from django.db import migrations, models

# PostgreSQL: statement-level triggers with transition tables, one bump per
# project per statement (a 10,000-row upload chunk costs one row update, not
# 10,000). Projects in id order, so writers of several projects lock alike.
# `engage.catalog_state_deferred` lets the catalog import's parallel writers,
# which commit in file order, bump the token themselves in their commit turn
# (catalog.services.catalog_state_bump): taken here, the lock would be held by a
# later chunk while an earlier one waits for it, and the earlier one's commit is
# what the later one waits for.
POSTGRES_FORWARD = """
CREATE SEQUENCE catalog_state_token_seq;

CREATE FUNCTION catalog_state_bump_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('engage.catalog_state_deferred', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO catalog_catalogstate (project_id, token)
    SELECT project_id, nextval('catalog_state_token_seq')
    FROM (SELECT DISTINCT project_id FROM changed) AS projects ORDER BY project_id
    ON CONFLICT (project_id) DO UPDATE SET token = EXCLUDED.token;
    RETURN NULL;
END $$;

CREATE FUNCTION catalog_state_bump_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('engage.catalog_state_deferred', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO catalog_catalogstate (project_id, token)
    SELECT project_id, nextval('catalog_state_token_seq')
    FROM (SELECT project_id FROM before UNION SELECT project_id FROM after) AS projects ORDER BY project_id
    ON CONFLICT (project_id) DO UPDATE SET token = EXCLUDED.token;
    RETURN NULL;
END $$;

CREATE FUNCTION catalog_state_bump_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_catalogstate SET token = nextval('catalog_state_token_seq');
    RETURN NULL;
END $$;

CREATE TRIGGER catalog_state_insert AFTER INSERT ON catalog_product
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION catalog_state_bump_changed();
CREATE TRIGGER catalog_state_update AFTER UPDATE ON catalog_product
    REFERENCING OLD TABLE AS before NEW TABLE AS after
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_state_bump_updated();
CREATE TRIGGER catalog_state_delete AFTER DELETE ON catalog_product
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION catalog_state_bump_changed();
CREATE TRIGGER catalog_state_truncate AFTER TRUNCATE ON catalog_product
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_state_bump_all();

-- Catalogs that exist already get their first token.
INSERT INTO catalog_catalogstate (project_id, token)
SELECT project_id, nextval('catalog_state_token_seq') FROM (SELECT DISTINCT project_id FROM catalog_product) AS p;
"""

POSTGRES_BACKWARD = """
DROP TRIGGER IF EXISTS catalog_state_insert ON catalog_product;
DROP TRIGGER IF EXISTS catalog_state_update ON catalog_product;
DROP TRIGGER IF EXISTS catalog_state_delete ON catalog_product;
DROP TRIGGER IF EXISTS catalog_state_truncate ON catalog_product;
DROP FUNCTION IF EXISTS catalog_state_bump_changed();
DROP FUNCTION IF EXISTS catalog_state_bump_updated();
DROP FUNCTION IF EXISTS catalog_state_bump_all();
DROP SEQUENCE IF EXISTS catalog_state_token_seq;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="CatalogState",
            fields=[
                ("project_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("token", models.BigIntegerField()),
            ],
        ),
        migrations.RunSQL(POSTGRES_FORWARD, POSTGRES_BACKWARD),
    ]
