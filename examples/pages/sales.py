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
    # Sales
    """)
    return


@app.cell
def _(mo):
    sales = [
        {"region": "North", "q1": 120, "q2": 135},
        {"region": "South", "q1": 98, "q2": 110},
        {"region": "East", "q1": 143, "q2": 151},
        {"region": "West", "q1": 87, "q2": 102},
    ]
    table = mo.ui.table(sales, label="Quarterly sales (k$)")
    table
    return sales, table


@app.cell
def _(mo, sales, table):
    rows = table.value or sales
    total = sum(row["q1"] + row["q2"] for row in rows)
    mo.md(f"Total for the selected regions: **{total} k$**")
    return


if __name__ == "__main__":
    app.run()
