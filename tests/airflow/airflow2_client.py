"""An on-call script as written for Composer (Airflow 2), with the official
apache-airflow-client 2.x, against ferry's /airflow/api/v1. Run by tests/api.rs.

Environment: FERRY_URL (the daemon), FERRY_TOKEN_NAME and FERRY_TOKEN (Basic auth),
FERRY_FLAG (the file whose presence makes the DAG's `load` task succeed)."""

import datetime
import os
import pathlib
import time

import airflow_client.client as client
from airflow_client.client.api import dag_api, dag_run_api, task_instance_api
from airflow_client.client.exceptions import ApiException
from airflow_client.client.model.clear_dag_run import ClearDagRun
from airflow_client.client.model.clear_task_instances import ClearTaskInstances
from airflow_client.client.model.dag import DAG
from airflow_client.client.model.dag_run import DAGRun
from airflow_client.client.model.update_task_instance import UpdateTaskInstance
from airflow_client.client.model.update_task_state import UpdateTaskState

URL = os.environ["FERRY_URL"] + "/airflow/api/v1"
DAG_ID = "nightly"


def config(password):
    return client.Configuration(
        host=URL, username=os.environ["FERRY_TOKEN_NAME"], password=password
    )


def wait_for(runs, run_id, states):
    deadline = time.time() + 30
    while time.time() < deadline:
        run = runs.get_dag_run(DAG_ID, run_id)
        if str(run.state) in states:
            return run
        time.sleep(0.2)
    raise AssertionError(f"{run_id} never reached {states}")


def states(tis, run_id):
    listed = tis.get_task_instances(DAG_ID, run_id)
    return {t.task_id: (str(t.state) if t.state is not None else None) for t in listed.task_instances}


with client.ApiClient(config(os.environ["FERRY_TOKEN"])) as api:
    dags = dag_api.DAGApi(api)
    runs = dag_run_api.DAGRunApi(api)
    tis = task_instance_api.TaskInstanceApi(api)

    assert dags.get_dag(DAG_ID).is_paused is False

    made = runs.post_dag_run(
        DAG_ID,
        DAGRun(
            dag_run_id="af2_run",
            logical_date=datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc),
            conf={"days": 3},
            note="from the Airflow 2 client",
        ),
    )
    assert made.dag_run_id == "af2_run", made
    assert made.conf == {"days": 3}, made
    run = wait_for(runs, "af2_run", {"failed"})
    assert run.external_trigger is True
    assert states(tis, "af2_run") == {"load": "failed", "publish": "upstream_failed"}

    listed = runs.get_dag_runs(DAG_ID, limit=10)
    assert listed.total_entries >= 1
    assert "af2_run" in [r.dag_run_id for r in listed.dag_runs]
    every = runs.get_dag_runs("~", state=["failed"])
    assert "af2_run" in [r.dag_run_id for r in every.dag_runs]

    # A bare clear is a dry run of the failed tasks (Airflow's defaults).
    dry = dags.post_clear_task_instances(DAG_ID, ClearTaskInstances(dag_run_id="af2_run"))
    assert sorted(t.task_id for t in dry.task_instances) == ["load", "publish"], dry
    assert str(runs.get_dag_run(DAG_ID, "af2_run").state) == "failed"

    pathlib.Path(os.environ["FERRY_FLAG"]).write_text("")
    done = dags.post_clear_task_instances(
        DAG_ID, ClearTaskInstances(dag_run_id="af2_run", dry_run=False)
    )
    assert sorted(t.task_id for t in done.task_instances) == ["load", "publish"], done
    wait_for(runs, "af2_run", {"success"})
    assert states(tis, "af2_run") == {"load": "success", "publish": "success"}

    # Setting a state by hand (Airflow 2's dry_run defaults to true).
    tis.patch_task_instance(DAG_ID, "af2_run", "publish", UpdateTaskInstance(new_state=UpdateTaskState("failed")))
    assert str(tis.get_task_instance(DAG_ID, "af2_run", "publish").state) == "success"
    tis.patch_task_instance(
        DAG_ID,
        "af2_run",
        "publish",
        UpdateTaskInstance(new_state=UpdateTaskState("failed"), dry_run=False),
    )
    assert str(tis.get_task_instance(DAG_ID, "af2_run", "publish").state) == "failed"

    whole = runs.clear_dag_run(DAG_ID, "af2_run", ClearDagRun(dry_run=True))
    assert sorted(t["task_id"] for t in whole["task_instances"]) == ["load", "publish"], whole

    paused = dags.patch_dag(DAG_ID, DAG(is_paused=True), update_mask=["is_paused"])
    assert paused.is_paused is True
    assert dags.patch_dag(DAG_ID, DAG(is_paused=False)).is_paused is False

    # Errors are RFC 7807.
    try:
        runs.get_dag_run(DAG_ID, "nope")
        raise AssertionError("an unknown run must be 404")
    except ApiException as error:
        assert error.status == 404, error
        assert error.headers["content-type"] == "application/problem+json", error.headers
        assert '"title"' in error.body and '"status":404' in error.body, error.body

with client.ApiClient(config("not-the-token")) as api:
    try:
        dag_api.DAGApi(api).get_dag(DAG_ID)
        raise AssertionError("a wrong password must be 401")
    except ApiException as error:
        assert error.status == 401, error

print("airflow 2 client: ok")
