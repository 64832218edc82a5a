import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo

    return (mo,)


@app.cell
def _(mo):
    target = mo.ui.number(0, 1000, value=500, label="Quarterly target (k$)")
    target
    return (target,)


@app.cell
def _(mo, target):
    booked = 430
    mo.md(f"# Sales\n\nBooked **{booked} k$** of **{target.value} k$** "
          f"({100 * booked / max(target.value, 1):.0f} %). Only the sales team sees this.")
    return


if __name__ == "__main__":
    app.run()
