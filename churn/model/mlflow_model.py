"""The pyfunc entry point MLflow logs with every model (models-from-code; see `pyfunc`).

MLflow runs this file when it loads a logged model; nothing else imports it.
"""

from mlflow.models import set_model

from churn.model.pyfunc import ChurnPyfunc

set_model(ChurnPyfunc())
