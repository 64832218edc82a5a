import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo

    return (mo,)


@app.cell
def _(mo):
    request = mo.app_meta().request
    user = (request.user or {}) if request is not None else {}
    name = user.get("username") or "stranger"
    mo.md(f"# Hello, **{name}**\n\nEveryone may open this notebook.")
    return


if __name__ == "__main__":
    app.run()
