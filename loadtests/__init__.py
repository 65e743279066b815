"""LiveCore load tests: locust users speaking the real protocol, and the command
that runs them (`python -m loadtests --scenario flash-sale --users 500`).

See docs/loadtests.md. Modules imported by the orchestrator (cli, scenarios,
provision, localstack, watcher, correctness, report, metrics, safety) never
import gevent or locust; only locustfile.py (run inside the locust subprocess) does.
"""
