// LiveMonitor: loss/accuracy curves and diagnostic panels, updated with streamed rows.

async function render({ model, el }) {
  return renderPanels({ model, el }, null);
}

export default { initialize: initializeModel, render };
