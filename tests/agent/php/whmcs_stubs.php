<?php
// Just enough of WHMCS for deploy/whmcs/invoice_sync.php: add_hook, localAPI('GetInvoice'),
// logActivity and Capsule::table('tblinvoices') over an in-memory table loaded from JSON.
namespace WHMCS\Database {
    class Builder
    {
        private $table;
        private $where = array();

        public function __construct($table)
        {
            $this->table = $table;
        }

        public function where($column, $value)
        {
            $this->where[] = array($column, $value);
            return $this;
        }

        private function matches($row)
        {
            foreach ($this->where as $w) {
                if ((string) $row[$w[0]] !== (string) $w[1]) {
                    return false;
                }
            }
            return true;
        }

        public function update(array $values)
        {
            $n = 0;
            foreach ($GLOBALS['STUB_TABLES'][$this->table] as $i => $row) {
                if ($this->matches($row)) {
                    $GLOBALS['STUB_TABLES'][$this->table][$i] = array_merge($row, $values);
                    $n++;
                }
            }
            return $n;
        }

        public function value($column)
        {
            foreach ($GLOBALS['STUB_TABLES'][$this->table] as $row) {
                if ($this->matches($row)) {
                    return $row[$column];
                }
            }
            return null;
        }
    }

    class Capsule
    {
        public static function table($name)
        {
            return new Builder($name);
        }
    }
}

namespace {
    define('WHMCS', true);
    $GLOBALS['STUB_HOOKS'] = array();
    $GLOBALS['STUB_LOG'] = array();
    $GLOBALS['STUB_TABLES'] = array('tblinvoices' => array());

    function add_hook($event, $priority, $callback)
    {
        $GLOBALS['STUB_HOOKS'][$event][] = $callback;
    }

    function run_hook($event, array $vars)
    {
        foreach (isset($GLOBALS['STUB_HOOKS'][$event]) ? $GLOBALS['STUB_HOOKS'][$event] : array() as $cb) {
            $cb($vars);
        }
    }

    function logActivity($message)
    {
        $GLOBALS['STUB_LOG'][] = $message;
    }

    function localAPI($command, array $values)
    {
        if ($command !== 'GetInvoice') {
            return array('result' => 'error', 'message' => "stub: $command not implemented");
        }
        foreach ($GLOBALS['STUB_TABLES']['tblinvoices'] as $row) {
            if ((int) $row['id'] === (int) $values['invoiceid']) {
                return array_merge(array('result' => 'success', 'invoiceid' => $row['id']), $row);
            }
        }
        return array('result' => 'error', 'message' => 'Invoice ID Not Found');
    }
}
