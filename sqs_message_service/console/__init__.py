"""The operator console (`queue-console`): one live page of the whole system, and the dead
letters with the reasons the worker recorded, with redrive and delete behind CONSOLE_KEYS.

- `app`: the app factory and `main`; `handlers`: its API (console.yml);
- `feed`: one reading of SQS and the metrics per CONSOLE_REFRESH, the last 15 minutes kept;
- `readings`: the rates, from /metrics pages (CONSOLE_SCRAPE) or Prometheus (PROMETHEUS_URL);
- `dead_letters`: a sampled page of dead letters, and the actions on them;
- `guard`: keys, same origin and CSRF token for an action; the headers of every answer.
"""
