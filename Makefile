# sluice — developer and CI entry points.
#
#   make test            start the real-service test bed (Kafka, Redis,
#                        ClickHouse on loopback), run test-go against it, stop it
#   make test-go         vet + tests + generated-code check, against whatever
#                        SLUICE_TEST_* services the environment names
#   make generate        regenerate proto/gen with buf
#   make generate-check  fail if proto/gen is stale or has untracked files
#   make dev             run sluice in dev mode
#   make testbed-up      start the test bed and leave it running (env: .testbed/env)
#   make testbed-down    stop it

GO ?= go
TESTBED := ./deploy/testbed.sh

.PHONY: test test-go generate generate-check dev testbed-up testbed-down testbed-status

test:
	$(TESTBED) run -- $(MAKE) test-go

test-go:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...
	$(MAKE) generate-check

generate:
	$(GO) run -modfile=tools/go.mod github.com/bufbuild/buf/cmd/buf generate

generate-check: generate
	@if ! git diff --quiet --exit-code -- proto/gen; then \
		echo "generate-check: proto/gen is STALE: 'make generate' changed these files:" >&2; \
		git diff --stat -- proto/gen >&2; \
		echo "generate-check: run 'make generate' and commit the result" >&2; \
		exit 1; \
	fi
	@untracked="$$(git status --porcelain --untracked-files=all -- proto/gen | grep '^??' || true)"; \
	if [ -n "$$untracked" ]; then \
		echo "generate-check: proto/gen has UNTRACKED generated files:" >&2; \
		echo "$$untracked" >&2; \
		echo "generate-check: run 'make generate' and commit (git add) the result" >&2; \
		exit 1; \
	fi
	@echo "generate-check: proto/gen is up to date"

dev:
	$(GO) run ./cmd/sluice dev

testbed-up:
	$(TESTBED) start
	@echo "testbed up; to use it: . .testbed/env   (or \$$SLUICE_TESTBED_DIR/env)"

testbed-down:
	$(TESTBED) stop

testbed-status:
	$(TESTBED) status
