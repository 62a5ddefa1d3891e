#!/usr/bin/env python3
"""Triage a patient conversation and render a PDF report: a `wharf worker --exec` handler.

Mirrors a WhatsApp triage service (webhook -> queue -> LLM worker -> PDF in object storage):
the payload is a conversation, the handler classifies its urgency (a keyword model stands in
for the LLM call), renders a one-page PDF, and stores it under $REPORTS_DIR. The report's path
depends only on the conversation id, so a retried attempt overwrites the same file: the
handler is idempotent, as at-least-once delivery requires.

Protocol (no SDK): the payload arrives on stdin; `wharf progress` and `wharf result` report
back to the worker; exit 0 succeeds, exit 100 fails the job for good, anything else retries.
"""
import json
import os
import subprocess
import sys

URGENT = ("chest pain", "can't breathe", "cannot breathe", "unconscious", "bleeding")
SOON = ("fever", "vomiting", "dizzy", "rash")


def progress(percent, stage):
    subprocess.run(["wharf", "progress", str(percent), "--stage", stage], check=True)


def classify(text):
    lowered = text.lower()
    if any(word in lowered for word in URGENT):
        return "urgent"
    if any(word in lowered for word in SOON):
        return "soon"
    return "routine"


def pdf(lines):
    """A minimal one-page PDF with the given lines of text."""
    def escape(s):
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    text = "BT /F1 12 Tf 72 740 Td 14 TL " + " ".join(f"({escape(l)}) '" for l in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(text)} >>\nstream\n{text}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = "%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n"
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    return out.encode("latin-1", "replace")


def main():
    try:
        job = json.load(sys.stdin)
        conversation = job["conversation_id"]
        messages = job["messages"]
    except (ValueError, KeyError, TypeError) as err:
        print(f"malformed triage payload: {err}", file=sys.stderr)
        sys.exit(100)  # retrying cannot fix the payload

    progress(10, "classifying")
    urgency = classify(" ".join(m.get("text", "") for m in messages))
    print(f"conversation {conversation}: {urgency} (job {os.environ['WHARF_JOB_ID']}, attempt {os.environ['WHARF_ATTEMPT']})")

    progress(60, "rendering")
    lines = [f"Triage report - conversation {conversation}", f"Urgency: {urgency}", ""]
    lines += [f"{m.get('from', '?')}: {m.get('text', '')}" for m in messages]
    reports = os.environ.get("REPORTS_DIR", "reports")
    os.makedirs(reports, exist_ok=True)
    path = os.path.join(reports, f"{conversation}.pdf")
    with open(path + ".tmp", "wb") as f:
        f.write(pdf(lines))
    os.replace(path + ".tmp", path)

    progress(100, "stored")
    result = {"report": path, "urgency": urgency, "messages": len(messages)}
    subprocess.run(["wharf", "result", json.dumps(result)], check=True)


if __name__ == "__main__":
    main()
