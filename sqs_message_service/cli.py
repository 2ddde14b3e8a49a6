"""The exit codes every entry point's `main` returns, one convention for all of them, so that a
supervisor, a script or CI can tell "fix how it is started" from "it failed while working".

Each `main(argv=None) -> int` reads its settings with `settings.settings_for_command` (which
configures logging from log.conf and names a wrong variable), then parses its options with
argparse, whose own errors exit `EXIT_USAGE` too; `python <entry point>` ends with
`sys.exit(main())`. docs/operations.md, "Exit codes", is the table users read.
"""

#: Done: what was asked finished, or a long-running part stopped as asked (SIGTERM, SIGINT,
#: `--exit-when-idle`) with everything it held settled.
EXIT_OK = 0
#: Failed while working: SQS or DynamoDB unreachable, refusing or not authorizing, a queue or
#: table missing, a port taken, a call or a message that failed, a stop that outran its grace.
#: The same command may succeed once that is put right; a supervisor may start it again.
EXIT_FAILED = 1
#: Started wrongly: an unknown option or a bad value, a setting that is invalid as given (the
#: line names the variable) or that names what is not on this machine (a PROCESSOR step, a
#: WORKER_CPU, an API_KEYS_FILE), a client's --url that answers but is not the writer. Starting
#: it again as it is cannot help. argparse exits with this code as well.
EXIT_USAGE = 2
