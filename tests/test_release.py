"""Release metadata stays honest: version = changelog, the full licence, no invented URLs."""

import re

import tomllib

from conftest import ROOT


def test_version_matches_the_changelog_top_entry():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    top = re.search(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert top and top.group(1) == version, (version, top and top.group(1))


def test_licence_is_the_full_gpl3_text():
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert "TERMS AND CONDITIONS" in text and "END OF TERMS AND CONDITIONS" in text


def test_registry_metadata_names_no_made_up_places():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    urls = meta["project"].get("urls", {})
    assert all(u.strip() and "tcig-nodes" not in u for u in urls.values()), urls  # only real, filled-in addresses
    comfy = meta["tool"]["comfy"]
    assert set(comfy) <= {"PublisherId", "DisplayName", "Icon", "Models", "includes", "web", "banner_url"}, comfy
