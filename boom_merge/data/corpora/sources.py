"""The registry: every source a corpus build knows, where it lives and how it is installed.

Owns: the one list of sources (role, licence, install command, MTEB facts) and where their
downloads live (:func:`downloads_dir`, under :func:`boom_merge.cache_dir.cache_root`); evaluation, cards and ``data list``
read a source's facts here. It never reads a source's files itself (its reader module does)
and never writes.
"""

from __future__ import annotations

from pathlib import Path

from boom_merge.cache_dir import cache_root
from boom_merge.data.corpora.bible import read_bible
from boom_merge.data.corpora.common import MtebMeta, Source
from boom_merge.data.corpora.dictionaries import read_devil, read_foldoc, read_gcide, read_jargon, read_vera
from boom_merge.data.corpora.manpages import read_manpages
from boom_merge.data.corpora.python_api import API_GLOB, read_python_api
from boom_merge.data.corpora.python_code import read_python_code, stdlib_root
from boom_merge.data.corpora.python_faq import FAQ_GLOB, read_python_faq
from boom_merge.data.corpora.wordnet import read_wordnet
from boom_merge.data.corpora.wordsim import WHEEL_GLOB, fetch_wheel, read_wordsim

APT = "apt-get install -y"
_PUBLIC_DOMAIN = "https://creativecommons.org/publicdomain/mark/1.0/"
_PSF = "https://docs.python.org/3/license.html"


def downloads_dir() -> Path:
    """Where fetched archives (the gensim wheel) are kept, shared by all builds."""
    return cache_root() / "downloads"


def registry() -> dict[str, Source]:
    """All known sources by name, in build order (earlier sources win exact duplicates).

    The out-of-domain dev sources come last, so adding them changes no document of the others.
    """
    dictd = Path("/usr/share/dictd")
    sources = [
        Source(
            name="wordnet",
            role="train",
            mteb=MtebMeta("WordNet", ("Written",), "https://wordnet.princeton.edu/license-and-commercial-use"),
            domain="general English: term -> definition",
            licence="WordNet 3.0 licence (Princeton University; permissive, keep the copyright notice)",
            origin="WordNet 3.0, /usr/share/wordnet/data.{noun,verb,adj,adv}",
            install=f"{APT} wordnet-base",
            root=Path("/usr/share/wordnet"),
            read=read_wordnet,
            needs=("data.noun", "data.verb", "data.adj", "data.adv"),
        ),
        Source(
            name="foldoc",
            role="train",
            mteb=MtebMeta("Foldoc", ("Engineering", "Written"), "https://www.gnu.org/licenses/fdl-1.3.html"),
            domain="computing: term -> definition",
            licence="GFDL 1.1 or later (Free On-line Dictionary of Computing)",
            origin="FOLDOC dictd database, /usr/share/dictd/foldoc.*",
            install=f"{APT} dict-foldoc",
            root=dictd,
            read=read_foldoc,
            needs=("foldoc.index", "foldoc.dict.dz"),
        ),
        Source(
            name="manpages",
            role="train",
            mteb=MtebMeta("ManPages", ("Programming", "Written"), "multiple"),
            domain="Linux API and commands: man page NAME line -> DESCRIPTION",
            licence="various free licences per page (GPL-2+, BSD, Verbatim; see /usr/share/doc/manpages/copyright)",
            origin="Linux man pages, /usr/share/man/man[1-8], rendered with groff (gcloud pages excluded)",
            install=f"{APT} man-db groff-base manpages manpages-dev",
            root=Path("/usr/share/man"),
            read=read_manpages,
            needs=("man2/*", "man3/*"),
            programs=("groff",),
        ),
        Source(
            name="bible_kjv_web",
            role="train",
            mteb=MtebMeta("BibleKjvWeb", ("Religious", "Written"), _PUBLIC_DOMAIN),
            domain="paraphrase: King James verse (archaic) -> World English Bible verse (modern)",
            licence="public domain (KJV outside the UK; WEB)",
            origin="SWORD modules engKJV2006eb and engWEB2015eb, /usr/share/sword, read with pysword",
            install=f"{APT} sword-text-kjv sword-text-web && pip install pysword",
            root=Path("/usr/share/sword"),
            read=read_bible,
            needs=("mods.d/engKJV2006eb.conf", "mods.d/engWEB2015eb.conf"),
            modules=("pysword",),
        ),
        Source(
            name="python_code",
            role="train",
            mteb=MtebMeta("PythonCode", ("Programming",), _PSF),
            domain="code search: Python docstring -> function source",
            licence="PSF License 2.0 (Python standard library)",
            origin="standard library .py files of the running Python, parsed with ast",
            install="a Python installation that ships its standard library sources",
            root=stdlib_root(),
            read=read_python_code,
            needs=("json/*.py",),
        ),
        Source(
            name="python_faq",
            role="ood_test",
            mteb=MtebMeta("PythonFaq", ("Programming", "Written"), _PSF),
            domain="question answering: Python FAQ question -> answer",
            licence="PSF License 2.0 (Python documentation)",
            origin=f"Python FAQ reStructuredText sources, /usr/share/doc/{FAQ_GLOB}",
            install=f"{APT} python3-doc",
            root=Path("/usr/share/doc"),
            read=read_python_faq,
            needs=(FAQ_GLOB,),
        ),
        Source(
            name="devil",
            role="ood_test",
            mteb=MtebMeta("Devil", ("Fiction", "Written"), _PUBLIC_DOMAIN),
            domain="satirical definitions: term -> definition (out of domain)",
            licence="public domain (Ambrose Bierce, The Devil's Dictionary, 1911)",
            origin="Devil's Dictionary dictd database, /usr/share/dictd/devil.*",
            install=f"{APT} dict-devil",
            root=dictd,
            read=read_devil,
            needs=("devil.index", "devil.dict.dz"),
        ),
        Source(
            name="wordsim353",
            role="ood_test",
            mteb=MtebMeta("WordSim353", ("Written",), "not specified"),
            domain="graded word similarity (evaluation only, Spearman)",
            licence="research test collection (Finkelstein et al. 2002), redistributed in gensim (LGPL-2.1)",
            origin="gensim wheel member gensim/test/test_data/wordsim353.tsv, read with zipfile",
            install=f"pip download gensim --no-deps --only-binary=:all: -d {downloads_dir()}",
            root=downloads_dir(),
            read_sts=read_wordsim,
            fetch=fetch_wheel,
            needs=(WHEEL_GLOB,),
        ),
        Source(
            name="jargon",
            role="ood_dev",
            mteb=MtebMeta("Jargon", ("Engineering", "Written"), _PUBLIC_DOMAIN),
            domain="hacker slang: term -> definition (out-of-domain dev)",
            licence="public domain (The Jargon File 4.4.7, Eric S. Raymond)",
            origin="Jargon File dictd database, /usr/share/dictd/jargon.*",
            install=f"{APT} dict-jargon",
            root=dictd,
            read=read_jargon,
            needs=("jargon.index", "jargon.dict.dz"),
        ),
        Source(
            name="vera",
            role="ood_dev",
            mteb=MtebMeta("Vera", ("Engineering", "Written"), "https://www.gnu.org/licenses/fdl-1.3.html"),
            domain="acronyms: acronym -> expansion (out-of-domain dev)",
            licence="GFDL 1.1 or later, no invariant sections (V.E.R.A., Virtual Entity of Relevant Acronyms)",
            origin="VERA dictd database, /usr/share/dictd/vera.*",
            install=f"{APT} dict-vera",
            root=dictd,
            read=read_vera,
            needs=("vera.index", "vera.dict.dz"),
        ),
        Source(
            name="gcide",
            role="ood_dev",
            mteb=MtebMeta("Gcide", ("Written",), "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html"),
            domain="Webster's 1913 English: term -> first sense (out-of-domain dev)",
            licence="GPL-2+ (GCIDE, GNU Collaborative International Dictionary of English)",
            origin="GCIDE dictd database, /usr/share/dictd/gcide.*, Webster 1913 entries only",
            install=f"{APT} dict-gcide",
            root=dictd,
            read=read_gcide,
            needs=("gcide.index", "gcide.dict.dz"),
        ),
        Source(
            name="python_api",
            role="ood_dev",
            mteb=MtebMeta("PythonApi", ("Programming", "Written"), _PSF),
            domain="API docs: Python library signature -> description (out-of-domain dev)",
            licence="PSF License 2.0 (Python documentation)",
            origin=f"Python library reference reStructuredText sources, /usr/share/doc/{API_GLOB}",
            install=f"{APT} python3-doc",
            root=Path("/usr/share/doc"),
            read=read_python_api,
            needs=(API_GLOB,),
        ),
    ]
    return {source.name: source for source in sources}
