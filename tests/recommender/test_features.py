from __future__ import annotations

import numpy as np
import polars as pl

from recommender.features import FeatureSpace
from recommender.idmap import IdMap


def test_feature_rows_identity_tags_and_normalisation():
    frame = pl.DataFrame({"customer_id": ["a", "b"], "band": ["x", None], "flag": [True, False]})
    space = FeatureSpace.fit(
        frame,
        id_column="customer_id",
        columns=["band", "flag"],
        identity=IdMap.from_sorted(frame["customer_id"], name="customer_id"),
    )
    assert space.tags.external_ids.to_list() == ["band=x", "flag=false", "flag=true"]
    x = space.transform(pl.DataFrame({"customer_id": ["b", "new"], "band": ["x", "unseen"], "flag": [True, None]}))
    dense = x.toarray()
    # b: identity(b) + band=x + flag=true -> 1/3 each; "new": no identity, unseen band ignored, null flag -> empty row.
    np.testing.assert_allclose(dense[0], [0, 1 / 3, 1 / 3, 0, 1 / 3], rtol=1e-6)
    np.testing.assert_array_equal(dense[1], np.zeros(5))
