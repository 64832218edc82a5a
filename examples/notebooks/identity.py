import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo
    return (mo,)


@app.cell
def _(mo):
    # Who signed in, as the marimo_rs gateway says (sign-in with an identity provider, the
    # token, or a trusted front proxy). Outside the gateway, `request` is None.
    request = mo.app_meta().request
    user = request.user if request is not None else {}
    signed_in = bool(user.get("is_authenticated"))
    name = user.get("username")
    email = user.get("email")
    groups = user.get("groups") or []
    claims = user.get("claims") or {}
    return claims, email, groups, name, signed_in


@app.cell
def _(claims, email, groups, mo, name, signed_in):
    # The email in a code span: markdown would turn a bare address into a mailto link.
    mo.md(
        f"Signed in as **{name}**; groups: **{', '.join(groups) or 'none'}**; "
        f"email: `{email or 'none'}`; claims: `{sorted(claims)}`."
        if signed_in
        else "Not signed in."
    )
    return


if __name__ == "__main__":
    app.run()
