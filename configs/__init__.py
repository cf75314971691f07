"""The built-in recipes, installed as the package ``partseg.configs``.

This folder is the one copy of the YAML recipes: the wheel ships it as ``partseg.configs`` and
editable installs map that package here (see ``package-dir`` in ``pyproject.toml``). Look a
recipe up by name with :func:`partseg.recipes.recipe_path`.
"""
