"""The shared browser helper itself: it draws a page and catches what a page gets wrong."""

from __future__ import annotations

import pytest

from tests import browser


def test_a_page_that_runs_its_script_reports_no_errors(browser_page, tmp_path):
    page_file = tmp_path / "ok.html"
    page_file.write_text("<p id=out></p><script>document.getElementById('out').textContent = 6 * 7;</script>")
    page = browser_page.open(page_file)
    assert page.locator("#out").text_content() == "42"
    browser_page.assert_no_errors()


def test_a_script_that_throws_or_logs_an_error_is_caught(browser_page, tmp_path):
    page_file = tmp_path / "bad.html"
    page_file.write_text("<script>console.error('drawn wrong');</script><script>undefinedFunction();</script>")
    browser_page.open(page_file)
    assert any("drawn wrong" in error for error in browser_page.errors)
    assert any("undefinedFunction" in error for error in browser_page.errors)
    with pytest.raises(AssertionError, match="the page reported errors"):
        browser_page.assert_no_errors()
    browser_page.errors.clear()


def test_without_a_browser_page_tests_skip_here_but_fail_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        browser.require_browser()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        browser.require_browser()
