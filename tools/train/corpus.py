"""KJV corpus for the tiny pair: verses from Debian's `bible` program, grouped into chapters,
split train / held-out by chapter (every 50th chapter is held out), and rendered as training
documents (plain text, or a chat turn "Book N" -> chapter text so the chat demo is meaningful)."""
import re
import subprocess

# Full book names, in canonical order; `bible` prints abbreviations (Ge, Ex, ..., Re).
BOOKS = """Genesis|Exodus|Leviticus|Numbers|Deuteronomy|Joshua|Judges|Ruth|1 Samuel|2 Samuel|1 Kings|
2 Kings|1 Chronicles|2 Chronicles|Ezra|Nehemiah|Esther|Job|Psalms|Proverbs|Ecclesiastes|
Song of Solomon|Isaiah|Jeremiah|Lamentations|Ezekiel|Daniel|Hosea|Joel|Amos|Obadiah|Jonah|Micah|
Nahum|Habakkuk|Zephaniah|Haggai|Zechariah|Malachi|Matthew|Mark|Luke|John|Acts|Romans|
1 Corinthians|2 Corinthians|Galatians|Ephesians|Philippians|Colossians|1 Thessalonians|
2 Thessalonians|1 Timothy|2 Timothy|Titus|Philemon|Hebrews|James|1 Peter|2 Peter|1 John|2 John|
3 John|Jude|Revelation""".replace("\n", "").split("|")

HOLDOUT_EVERY = 50  # chapter index i (0-based, whole Bible) is held out when i % 50 == 49
VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def load_chapters():
    """[(book name, chapter number, [verse text, ...]), ...] in Bible order."""
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    chapters, abbrevs = [], []
    for line in out.splitlines():
        m = VERSE.match(line)
        if not m:
            raise ValueError(f"unexpected line from `bible`: {line!r}")
        abbr, ch, text = m.group(1), int(m.group(2)), m.group(4).strip()
        if not abbrevs or abbrevs[-1] != abbr:
            abbrevs.append(abbr)
        book = BOOKS[len(abbrevs) - 1]
        if not chapters or chapters[-1][0] != book or chapters[-1][1] != ch:
            chapters.append((book, ch, []))
        chapters[-1][2].append(text)
    if len(abbrevs) != len(BOOKS):
        raise ValueError(f"expected {len(BOOKS)} books from `bible`, got {len(abbrevs)}")
    return chapters


def split(chapters):
    train = [c for i, c in enumerate(chapters) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
    held = [c for i, c in enumerate(chapters) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
    return train, held


def chapter_text(chapter):
    return "\n".join(chapter[2])


def chapter_title(chapter):
    return f"{chapter[0]} {chapter[1]}"
