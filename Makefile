# The two commands of the README's Quick start, and their building blocks.
#   make demo   - build everything and start a 4-node cluster running the demo cell (`weft up`)
#   make test   - build everything and run every check CI runs

CARGO ?= cargo
DEMO_FOR ?= 10s

.PHONY: demo demo-single test setup test-tools guests lint

setup:
	bash scripts/setup.sh

# What the tests start besides weft: a real Prometheus, tmux and Chromium.
test-tools:
	bash scripts/setup.sh --tests

guests: setup
	bash scripts/build-guests.sh

demo: guests
	$(CARGO) run --release -p weft-cli -- up

# The same cell on one node, in-process, for a fixed time.
demo-single: guests
	$(CARGO) run --release -p weft-cli -- run examples/factory-cell.toml --for $(DEMO_FOR)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: test-tools guests lint
	$(CARGO) test --workspace
