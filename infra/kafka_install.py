"""Apache Kafka's jars from Maven Central (infra/pom.xml), assembled once into a libs folder; and the error every
part of the local Kafka raises."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from alertdist.jvm import MARKER, marker_lines

__all__ = ["POM", "KafkaInfraError", "install", "kafka_version", "pom_artifacts"]

POM = Path(__file__).resolve().parent / "pom.xml"


class KafkaInfraError(RuntimeError):
    """Installing, starting or stopping the local Kafka failed; the message says what to do next."""


_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def kafka_version() -> str:
    """The Kafka version pinned in infra/pom.xml."""
    version = ET.parse(POM).getroot().find("m:properties/m:kafka.version", _POM_NS)
    if version is None or not version.text:
        raise KafkaInfraError(f"{POM} has no <kafka.version> property")
    return version.text.strip()


def pom_artifacts() -> list[str]:
    """Every dependency infra/pom.xml asks for, as ``group:artifact:version`` with its properties filled in."""
    root = ET.parse(POM).getroot()
    props = {p.tag.split("}")[-1]: (p.text or "").strip() for p in root.find("m:properties", _POM_NS)}

    def text(dependency: ET.Element, name: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: props[m.group(1)], dependency.find(f"m:{name}", _POM_NS).text.strip())

    return [
        ":".join(text(d, name) for name in ("groupId", "artifactId", "version"))
        for d in root.findall("m:dependencies/m:dependency", _POM_NS)
    ]


def install(libs_dir: Path, *, log=print) -> str:
    """Fetch the jars infra/pom.xml asks for into ``libs_dir``; a no-op when the marker records exactly those.

    The marker lists every artifact, not just the Kafka version, so a folder fetched before the pom gained one
    (MirrorMaker 2's) is fetched again. The jars are copied into a scratch folder and moved into place only when
    Maven succeeded, so an interrupted install never leaves a half-filled libs folder that looks finished.
    """
    libs_dir = Path(libs_dir).absolute()  # mvn resolves a relative output folder against infra/
    version = kafka_version()
    wanted = [version, *pom_artifacts()]
    if marker_lines(libs_dir) == wanted:
        log(f"Kafka {version} already installed in {libs_dir}")
        return version
    if shutil.which("mvn") is None:
        raise KafkaInfraError("Maven (mvn) is not on PATH: install Maven 3.8+ and Java 17+, then run again")
    scratch = libs_dir.with_name(libs_dir.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    log(
        f"Fetching Apache Kafka {version} and MirrorMaker 2 from Maven Central into {libs_dir} "
        "(first time, or when infra/pom.xml changed; about 60 MB)..."
    )
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={scratch}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise KafkaInfraError(
            f"mvn could not fetch Kafka {version} (exit {result.returncode}); check network access to Maven "
            f"Central and run again.\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    (scratch / MARKER).write_text("\n".join(wanted) + "\n")
    shutil.rmtree(libs_dir, ignore_errors=True)
    libs_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch.rename(libs_dir)
    log(f"Kafka {version} installed ({len(list(libs_dir.glob('*.jar')))} jars)")
    return version
