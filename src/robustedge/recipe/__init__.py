"""Recipes: one YAML file from data to board (:func:`load_recipe`, :func:`run_recipe`)."""

from robustedge.recipe.loader import RecipeError
from robustedge.recipe.schema import Recipe, load_recipe, parse_recipe

__all__ = ["Recipe", "RecipeError", "load_recipe", "parse_recipe"]
