"""What a campaign run imports: the modules of its code path must not pull in LightGBM, scikit-learn or SciPy's
statistics at import time (together about 2.5 s of every fresh `mktg campaign run`); they are loaded only where
used (training, a booster without compiled code, an A/B report)."""

from __future__ import annotations

import subprocess
import sys


def test_the_campaign_run_path_imports_no_heavy_library():
    script = (
        "import sys\n"
        "import jobs.campaign_service, jobs.model_service, jobs.uplift_service\n"
        "import campaigns.uplift.models, campaigns.uplift.targeting, recommender.models.propensity\n"
        "import recommender.models.compiled_trees, recommender.models.forest_text\n"
        "print(sorted(m for m in ('lightgbm', 'sklearn', 'scipy.stats') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
