import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo

    return (mo,)


@app.cell
def _(mo):
    # The host's auth middleware inserted `marimo_rs::User`: marimo sees it as
    # `request.user`, a dict ({"username": ..., "is_authenticated": True, ...}), and
    # `User::with_meta(...)` as `request.meta`.
    request = mo.app_meta().request
    user = (request.user or {}) if request is not None else {}
    meta = (request.meta or {}) if request is not None else {}
    username = user.get("username")
    mo.md(f"# Welcome, {username}" if username else "# Welcome")
    return meta, username


@app.cell
def _(meta, mo, username):
    scope = meta.get("scope")
    mo.md(
        f"Signed in as **{username}**"
        + (f" with scope **{scope}**." if scope else ".")
        if username
        else "Not signed in."
    )
    return


@app.cell
def _(mo):
    mo.md("""
    - [Dashboard](dashboard/)
    - [Sales](sales/)
    """)
    return


if __name__ == "__main__":
    app.run()
