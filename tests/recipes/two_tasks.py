"""The tiny mm_world recipe plus a second task (masked text modelling on the same data):
what the two-task tests drive through the real command line."""
import importlib.util
import os

_MM_WORLD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "mm_world.py")


def get_config(variant=None):
  del variant
  spec = importlib.util.spec_from_file_location("_mm_world_recipe", _MM_WORLD)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("tiny")
  second = c.tasks.default.copy_and_resolve_references()
  second.objectives = dict(text_mlm=dict(type="masked", modality="text", ratio=0.3, weight=1.0))
  c.tasks.masked_text = second
  return c
