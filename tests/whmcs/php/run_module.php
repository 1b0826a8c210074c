<?php
// php run_module.php MODULE_DIR STATE_JSON ACTION [ARGS...]
//   ACTION: config | activate | deactivate | output | hook EVENT INVOICE_ID...
// Loads the tables (and "race": {invoice id: number another writer sets}) from STATE_JSON,
// runs the action, and prints {"tables", "log", "hooks", "result", "output"} as JSON.
require __DIR__ . '/whmcs_stubs.php';
list(, $moduleDir, $stateFile, $action) = $argv;
$state = json_decode(file_get_contents($stateFile), true);
$GLOBALS['STUB_TABLES'] = $state['tables'];
$GLOBALS['STUB_RACE'] = isset($state['race']) ? $state['race'] : array();
require $moduleDir . '/invoice_sync.php';
require $moduleDir . '/hooks.php';
$result = null;
ob_start();
if ($action === 'hook') {
    foreach (array_slice($argv, 5) as $invoiceId) {
        run_hook($argv[4], array('invoiceid' => (int) $invoiceId));
    }
} elseif ($action === 'output') {
    invoice_sync_output(array('modulelink' => 'addonmodules.php?module=invoice_sync', 'version' => '1.0'));
} else {
    $result = call_user_func('invoice_sync_' . $action);
}
$output = ob_get_clean();
echo json_encode(array(
    'tables' => $GLOBALS['STUB_TABLES'],
    'schemas' => $GLOBALS['STUB_SCHEMAS'],
    'log' => $GLOBALS['STUB_LOG'],
    'hooks' => array_keys($GLOBALS['STUB_HOOKS']),
    'result' => $result,
    'output' => $output,
));
