"""Submit a compiled kubeyolo pipeline to Kubeflow Pipelines (v2 API) and wait for it.

Usage: python tests/kind/kfp_run.py HOST PIPELINE_YAML TIMEOUT_S [name=value ...]
Prints one JSON line {"run_id": ..., "state": ...}; exits 0 only when the run SUCCEEDED.
Run by tests/kind/run.sh with the kfp SDK of .venvs/kfp (scripts/venv.sh kfp).
"""
import json
import sys

import kfp


def value(v):
    return {"true": True, "false": False}.get(v.lower(), v)


def main():
    host, package, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
    arguments = dict(a.split("=", 1) for a in sys.argv[4:])
    arguments = {k: value(v) for k, v in arguments.items()}
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        package, arguments=arguments, run_name="kubeyolo-kind", experiment_name="kubeyolo-kind"
    )
    result = client.wait_for_run_completion(run.run_id, timeout=timeout)
    state = str(result.state)
    print(json.dumps({"run_id": run.run_id, "state": state}))
    sys.exit(0 if state.endswith("SUCCEEDED") else 1)


if __name__ == "__main__":
    main()
