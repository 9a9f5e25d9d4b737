from grokwidgets.views.vega import vega_bundle


def test_bundle_is_offline_and_built_once():
    bundle = vega_bundle()
    assert "vegaEmbed" in bundle
    assert vega_bundle() is bundle
