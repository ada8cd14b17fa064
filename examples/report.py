"""The end-of-run report; it lives in `keras_rigl.recipes.report`.

Kept so that `from examples import report` keeps working.
"""

from keras_rigl.recipes.report import *  # pylint: disable=wildcard-import,unused-wildcard-import
from keras_rigl.recipes.report import build_report, format_report, save_figure, save_json  # pylint: disable=unused-import
