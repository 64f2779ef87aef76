"""What the app shows, computed without streamlit: settings controls, page view models, figures, projections."""
