"""Creator text (display names, bios, titles, embed_html) is data wherever we show it.

It is stored raw in the warehouse (``tiktok.accounts.display_name``, ``tiktok.videos.embed_html``
...): whoever renders it escapes it for what they render into. Here, every place of ours that
shows it, with a name that is a ``<script>``, an ``onerror`` handler, a Jinja template and
terminal escape sequences at once:

- the terminal: ``make demo``'s summary and ``make up``'s list of accounts (control characters
  escaped, one line per account; HTML is harmless there and stays as typed);
- HTML: the simulator's ``embed_html`` (escaped attribute values and text);
- the Airflow UI, where the name is a mapped task's map index, an XCom and a log line: shown as
  text in headless Chromium, no script runs, no dialog opens, the template is not rendered
  (``test_browser.py``, on the same stack as the other browser tests).
"""

from __future__ import annotations

import dataclasses
import time
from html.parser import HTMLParser

from tiktok_tools.demo import printable, summary_table

#: Everything at once: HTML that runs script, a Jinja template, a terminal title/clear, a bidi override.
HOSTILE = (
    "<script>window.__pwned='script'</script><img src=x onerror=\"window.__pwned='img';alert(1)\">"
    "{{ conn.tiktok_default.password }}\x1b]0;owned\x07\x1b[2J\u202eevil\r\n"
)
#: What a browser receives of it after the warehouse (the DAGs store it as TikTok sent it).
HTML_PART = HOSTILE.split("\x1b", 1)[0]
#: What the grid's map index shows of it: the label is cut to 100 characters (…), still holding the
#: script, the image and the start of the template.
LABEL_PART = HTML_PART[:99]


def test_a_terminal_gets_creator_text_as_data() -> None:
    shown = printable(HOSTILE, limit=1000)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown), repr(shown)
    assert "\u202e" not in shown
    assert shown.startswith(HTML_PART), "HTML is harmless in a terminal: it stays as typed"
    assert "\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\x0d\\x0a" in shown
    assert printable("Yuki Nguyen 🎉 Дарья") == "Yuki Nguyen 🎉 Дарья"
    assert len(printable("x" * 500)) == 60


def test_the_demo_summary_shows_a_hostile_name_on_one_line() -> None:
    rows = [(HOSTILE, "active", "", 3, 3, 1, 10, 3), ("Дарья", "active", "", 1, 1, 1, 5, 1)]
    lines = summary_table(rows)
    assert len(lines) == 4  # header, rule, one line per account
    assert not [c for line in lines for c in line if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0], lines
    assert lines[2].lstrip().startswith("<script>window.__pwned=") and "\u2026" in lines[2], "as typed, cut"
    assert lines[3].lstrip().startswith("Дарья")


def test_the_simulators_embed_html_escapes_what_it_embeds() -> None:
    from tiktok_sim.accounts import AccountStore
    from tiktok_sim.fields import render_video

    store = AccountStore(seed=7, epoch=time.time() - 400 * 86400)
    account = store.create(3)
    account.profile = dataclasses.replace(account.profile, username='x"><script>alert(1)</script><b x="')
    video = render_video(7, account, 0, ["embed_html", "share_url", "video_description"], time.time(), str)

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[tuple[str, dict[str, str | None]]] = []
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append((tag, dict(attrs)))

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    parser = Tags()
    parser.feed(video["embed_html"])
    assert [tag for tag, _ in parser.tags] == ["blockquote", "section", "script"], video["embed_html"]
    blockquote, _, script = (attrs for _, attrs in parser.tags)
    assert blockquote["cite"] == video["share_url"], "the whole URL, in its attribute"
    assert script["src"] == "https://www.tiktok.com/embed.js"
    assert video["video_description"] in "".join(parser.text)
