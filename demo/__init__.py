"""The Gradio demo (app.py); shipped in the wheel as taskembed.demo so that `taskembed demo` runs anywhere."""
