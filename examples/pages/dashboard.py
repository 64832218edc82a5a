import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo

    return (mo,)


@app.cell
def _(mo):
    mo.md("""
    # Dashboard
    """)
    return


@app.cell
def _(mo):
    visitors = mo.ui.slider(100, 1000, step=100, value=400, label="Daily visitors")
    rate = mo.ui.slider(1, 10, value=3, label="Conversion rate (%)")
    mo.vstack([visitors, rate])
    return rate, visitors


@app.cell
def _(mo, rate, visitors):
    orders = visitors.value * rate.value / 100
    mo.md(f"Expected orders per day: **{orders:.0f}**")
    return


if __name__ == "__main__":
    app.run()
