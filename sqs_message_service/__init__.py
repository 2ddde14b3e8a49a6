"""sqs-message-service: an OpenAPI-first writer and a worker that talk through an SQS queue.

The user's entry points stand at the top of the checkout (server.py, message.py, worker.py,
sqsinterface.py, config.py, client.py, sqs_setup.py) and import this package; it imports none of
them. Its modules, by role:

- shared: `settings` (every setting), `aws` (every AWS client), `sqs` (the SQS interface),
  `rules` (what SQS accepts, with its wording), `batcher` (group commit), `metrics`, `logs`,
  `keys` (API and console keys), `serving` (uvicorn with limits at the socket), `tables` (the
  DynamoDB tables), `leases` (the one lease store in them), `hooks` (the points of a request's
  and a message's life, which watch it), `tracing` (OpenTelemetry, one implementation of them)
  and `trace_header` (what travels in AWSTraceHeader, and the trace context's formats),
  `verdicts` (what a processing step can say: Reject, RetryLater), `output` (the worker's
  output file), `dlq` (dead letters; `queue-dlq`), `file_copy` (`client.py copy`);
- `writer/`: the writer's parts that server.py assembles;
- `worker/`: the worker's engine that worker.py runs;
- `console/`: the operator console (`queue-console`).

Every entry point's `main` returns one of the exit codes in `cli`.
"""
