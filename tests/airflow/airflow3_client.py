"""An on-call script as written for Airflow 3, with the official apache-airflow-client 3.x,
against ferry's /airflow/api/v2. Run by tests/api.rs.

Environment: FERRY_URL (the daemon), FERRY_TOKEN (bearer), FERRY_FLAG (the file whose
presence makes the DAG's `load` task succeed; absent when the script starts)."""

import os
import pathlib
import time

import airflow_client.client as client
from airflow_client.client.api import dag_api, dag_run_api, task_instance_api
from airflow_client.client.exceptions import ApiException
from airflow_client.client.models.clear_task_instances_body import ClearTaskInstancesBody
from airflow_client.client.models.dag_patch_body import DAGPatchBody
from airflow_client.client.models.dag_run_clear_body import DAGRunClearBody
from airflow_client.client.models.patch_task_instance_body import PatchTaskInstanceBody
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

URL = os.environ["FERRY_URL"] + "/airflow"
DAG_ID = "nightly"


def wait_for(runs, run_id, states):
    deadline = time.time() + 30
    while time.time() < deadline:
        run = runs.get_dag_run(DAG_ID, run_id)
        if run.state.value in states:
            return run
        time.sleep(0.2)
    raise AssertionError(f"{run_id} never reached {states}")


def states(tis, run_id):
    listed = tis.get_task_instances(DAG_ID, run_id)
    return {t.task_id: (t.state.value if t.state is not None else None) for t in listed.task_instances}


config = client.Configuration(host=URL, access_token=os.environ["FERRY_TOKEN"])
with client.ApiClient(config) as api:
    dags = dag_api.DAGApi(api)
    runs = dag_run_api.DagRunApi(api)
    tis = task_instance_api.TaskInstanceApi(api)

    dag = dags.get_dag(DAG_ID)
    assert dag.is_paused is False and dag.dag_id == DAG_ID

    # Airflow 3: logical_date is given, as null.
    body = TriggerDAGRunPostBody(dag_run_id="af3_run", logical_date=None, conf={})
    assert "logical_date" in body.to_dict(), body.to_dict()
    made = runs.trigger_dag_run(DAG_ID, body)
    assert made.dag_run_id == "af3_run", made
    run = wait_for(runs, "af3_run", {"failed"})
    assert run.run_type.value == "manual"
    assert states(tis, "af3_run") == {"load": "failed", "publish": "upstream_failed"}
    assert tis.get_task_instance(DAG_ID, "af3_run", "load").operator == "command"

    listed = runs.get_dag_runs(DAG_ID)
    assert "af3_run" in [r.dag_run_id for r in listed.dag_runs]

    dry = tis.post_clear_task_instances(DAG_ID, ClearTaskInstancesBody(dag_run_id="af3_run"))
    assert sorted(t.task_id for t in dry.task_instances) == ["load", "publish"], dry
    assert runs.get_dag_run(DAG_ID, "af3_run").state.value == "failed"

    pathlib.Path(os.environ["FERRY_FLAG"]).write_text("")
    whole = runs.clear_dag_run(DAG_ID, "af3_run", DAGRunClearBody(dry_run=False, only_failed=True))
    assert whole.actual_instance.dag_run_id == "af3_run", whole
    wait_for(runs, "af3_run", {"success"})

    marked = tis.patch_task_instance(
        DAG_ID, "af3_run", "publish", PatchTaskInstanceBody(new_state="skipped")
    )
    assert [t.state.value for t in marked.task_instances] == ["skipped"], marked

    assert dags.patch_dag(DAG_ID, DAGPatchBody(is_paused=True)).is_paused is True
    assert dags.patch_dag(DAG_ID, DAGPatchBody(is_paused=False)).is_paused is False

    # Errors are {"detail": ...}.
    try:
        runs.get_dag_run(DAG_ID, "nope")
        raise AssertionError("an unknown run must be 404")
    except ApiException as error:
        assert error.status == 404, error
        assert error.body.startswith('{"detail":'), error.body

bad = client.Configuration(host=URL, access_token="not-the-token")
with client.ApiClient(bad) as api:
    try:
        dag_api.DAGApi(api).get_dag(DAG_ID)
        raise AssertionError("a wrong token must be 401")
    except ApiException as error:
        assert error.status == 401, error

print("airflow 3 client: ok")
