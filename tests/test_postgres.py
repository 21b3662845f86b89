"""The `postgres` fixture (tests/postgres.py) is a real server: Optuna stores a study in it and it survives an outage."""

import optuna
import pytest
import sqlalchemy
from sqlalchemy.exc import OperationalError

pytestmark = pytest.mark.slow  # a PostgreSQL server, stopped and started again


def _count_tables(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")).scalar_one()
    finally:
        engine.dispose()


def test_server_is_local_password_protected_and_gives_fresh_databases(postgres):
    assert postgres.url.startswith(f"postgresql+psycopg://nas:{postgres.password}@127.0.0.1:")
    assert postgres.password not in repr(postgres)
    wrong = sqlalchemy.create_engine(postgres.url.replace(postgres.password, "wrong"))
    with pytest.raises(OperationalError, match="password authentication failed"):
        wrong.connect()
    wrong.dispose()
    engine = sqlalchemy.create_engine(postgres.url)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
        assert conn.execute(sqlalchemy.text("SHOW port")).scalar_one() == str(postgres.port)
    engine.dispose()

    url = postgres.new_database("fresh")
    optuna.storages.RDBStorage(url).engine.dispose()  # creates Optuna's tables
    assert _count_tables(url) > 0
    assert postgres.new_database("fresh") == url
    assert _count_tables(url) == 0  # the same name again: empty again


def test_optuna_study_survives_a_server_outage(postgres):
    url = postgres.new_database("outage")
    optuna.create_study(study_name="s", storage=optuna.storages.RDBStorage(url), direction="maximize").add_trial(
        optuna.trial.create_trial(params={"x": 0.25}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                  value=0.9))
    # a second storage object (own engine, own connections) reads what the first wrote
    study = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    assert [(t.params, t.value) for t in study.trials] == [({"x": 0.25}, 0.9)]

    postgres.stop()
    try:
        engine = sqlalchemy.create_engine(url)
        with pytest.raises(OperationalError) as refused:
            engine.connect()
        engine.dispose()
        assert postgres.password not in str(refused.value)
    finally:
        postgres.start()  # the other tests need it, whatever happened here

    study = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    assert [(t.params, t.value) for t in study.trials] == [({"x": 0.25}, 0.9)]
    assert study.best_value == 0.9
