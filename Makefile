# The two newcomer commands: `make demo` (main job on the shipped default) and `make test`.
# Both install uv with pip when it is missing; uv then resolves a torch/torchvision pair that imports.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

# The API reference (mkdocs.yml, docs/) built from the docstrings; outputs/ is git-ignored.
SITE := outputs/site
# --strict: a docstring mkdocstrings cannot read (an Args name not in the signature, a broken
# cross-reference) fails the build. Never with --quiet: it hides the warnings from the count too,
# and the build passes. The variable hides Material's banner about MkDocs 2.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(UV) run --locked --group docs mkdocs build --strict

.PHONY: demo test docs lint bench uv

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

demo: uv
	$(UV) run --locked defectaug demo --out outputs/demo

test: uv
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(MKDOCS) --site-dir $(SITE)
	$(UV) run --locked pytest -n 2

docs: uv
	$(MKDOCS) --site-dir $(SITE)
	@echo "API reference: $(SITE)/index.html"

bench: uv
	$(UV) run --locked --group bench python -m benchmarks.compositing
