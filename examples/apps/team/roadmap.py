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
    mo.md(
        f"# Team roadmap\n\nViewing as **{user.get('username')}**: the team (alice, bob) "
        "sees this notebook, nobody else."
    )
    return


@app.cell
def _(mo):
    mo.md("""
    | quarter | goal |
    |---|---|
    | Q3 | ship the gateway |
    | Q4 | notebooks for every team |
    """)
    return


if __name__ == "__main__":
    app.run()
