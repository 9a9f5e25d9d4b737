"""Altair is imported when a chart is first built, not by ``import grokwidgets``."""

import subprocess
import sys

CHECK = """
import sys
import grokwidgets as gw
from grokwidgets.views.lazy_altair import alt
loaded_before = "altair.vegalite" in sys.modules
from grokwidgets.views.charts import step_axis
axis = step_axis()
print(loaded_before, type(axis).__module__.startswith("altair"), "altair.vegalite" in sys.modules)
"""


def test_import_grokwidgets_does_not_load_altair_until_a_chart_is_built():
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr
