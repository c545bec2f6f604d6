# The two newcomer commands: `make demo` (main job on the shipped default) and `make test`.
# Both install uv with pip when it is missing; uv then resolves a torch/torchvision pair that imports.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: demo test lint bench uv

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

demo: uv
	$(UV) run --locked defectaug demo --out outputs/demo

test: uv
	$(UV) run --locked ruff check .
	$(UV) run --locked pytest -n 2

bench: uv
	$(UV) run --locked --group bench python -m benchmarks.compositing
