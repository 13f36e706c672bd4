"""The labelling team's hand-back: what a run writes for the people who annotate (selection.csv, the annotate lists in
priority order, the exports to Label Studio / CVAT / FiftyOne, report.html, the plots and thumbnails)."""
