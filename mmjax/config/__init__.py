"""Recipes and the registry base: the bottom layer every other package may read.

Owns loading a recipe file (`recipe.py`), command-line overrides and the old-layout upgrades
(`layout.py`), the component registry base (`registry.py`: `Registry`, `parse_dataclass`,
`check`), each task's settings (`task_settings.py`) and the checks that need nothing but
numbers (`value_checks.py`, `task_checks.py`). Imports only mmjax.errors: the parse of a
whole recipe, which needs the components, is mmjax/experiment.
"""
