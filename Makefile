# grab — make run starts grabd in the embedded mode; make test runs the whole suite.
GO        ?= go
# Integration tests use these servers; .ci/services starts them if they are down.
TEST_REDIS_ADDR ?= 127.0.0.1:6379
TEST_MYSQL_DSN  ?= root@tcp(127.0.0.1:3306)/test
TEST_NATS_URL   ?= nats://127.0.0.1:4222
# A count of runs, not a duration: a duration races Go 1.26's fuzzing
# coordinator at its deadline and can fail with "context deadline exceeded"
# and no failing input on a loaded machine (golang/go#75804, fixed in 1.27).
FUZZTIME  ?= 30000x

.PHONY: run build test unit vet lint fuzz bench services clean

## run: start grabd on the embedded default (in-process Redis + SQLite under ./data)
run:
	env -u REDIS_ADDR -u MYSQL_DSN $(GO) run ./cmd/grabd

build:
	$(GO) build -o grabd ./cmd/grabd
	$(GO) build -o grabbench ./cmd/grabbench
	$(GO) build -o transfersim ./cmd/transfersim
	$(GO) build -o grabevents ./cmd/grabevents

## test: vet, every test with the race detector against real Redis and MySQL, and a bounded fuzz
test: services vet
	REDIS_ADDR="$${REDIS_ADDR:-$(TEST_REDIS_ADDR)}" MYSQL_DSN="$${MYSQL_DSN:-$(TEST_MYSQL_DSN)}" NATS_URL="$${NATS_URL:-$(TEST_NATS_URL)}" \
		$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) fuzz

## unit: fast tests only (miniredis and SQLite; integration tests are skipped)
unit:
	$(GO) test -short ./...

vet:
	$(GO) vet ./...

lint: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

## fuzz: each fuzz target of the HTTP input parsing, for a bounded time
fuzz:
	$(GO) test ./http -run '^$$' -fuzz '^FuzzCreatePacket$$' -fuzztime $(FUZZTIME)
	$(GO) test ./http -run '^$$' -fuzz '^FuzzNotify$$' -fuzztime $(FUZZTIME)
	$(GO) test ./http -run '^$$' -fuzz '^FuzzStockDeduct$$' -fuzztime $(FUZZTIME)

## bench: grabbench's default comparison (raw probe, engine, HTTP, MySQL lock) with its audit; BENCHFLAGS adds flags
bench: services
	REDIS_ADDR="$${REDIS_ADDR:-$(TEST_REDIS_ADDR)}" MYSQL_DSN="$${MYSQL_DSN:-$(TEST_MYSQL_DSN)}" NATS_URL="$${NATS_URL:-$(TEST_NATS_URL)}" \
		$(GO) run ./cmd/grabbench $(BENCHFLAGS)

## services: make sure the local Redis and MariaDB the tests use are up (only when not given)
services:
	@if [ -z "$$REDIS_ADDR$$MYSQL_DSN" ]; then .ci/services; fi

clean:
	rm -rf data grabd grabbench transfersim grabevents
