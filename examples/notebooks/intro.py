import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo
    return (mo,)


@app.cell
def _(mo):
    mo.md("# Hello from marimo_rs")
    return


@app.cell
def _(mo):
    slider = mo.ui.slider(1, 10, value=3, label="Pick a number")
    slider
    return (slider,)


@app.cell
def _(mo, slider):
    mo.md(f"Slider value is **{slider.value}**; its square is **{slider.value ** 2}**.")
    return


@app.cell
def _(mo):
    request = mo.app_meta().request
    user = (request.user or {}).get("username") if request is not None else None
    mo.md(f"Signed in as: **{user}**" if user else "Not signed in.")
    return


if __name__ == "__main__":
    app.run()
