"""Files simprec hands out to run where simprec is not installed (imports nothing itself).

`simprec_capture.py`: the single-file, torch-only recorder of a native torch AMP run, for
`simprec replay` (docs/capture.md); `simprec capture --write-tool PATH` copies it. It lives here,
outside the core (simprec/ imports no GPU library), in a package so that it is installed with
simprec.
"""
