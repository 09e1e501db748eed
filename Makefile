# The two commands of the README, plus a few conveniences.
.PHONY: demo test lint servers-up servers-down

demo:            ## set up and run the main job on local disk (no servers)
	scripts/demo.sh

test:            ## set up, start the real servers, run the whole suite, stop them
	scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

servers-up:      ## start Redis, HDFS, Cassandra and FerretDB for manual use
	servers/up.sh

servers-down:
	servers/down.sh
